"""Score normalizers (kind ``normalizers``): cohort-based normalization of trial scores, vectorized."""
