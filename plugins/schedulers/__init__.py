"""Schedulers (kind ``schedulers``): learning-rate schedules stepped once per iteration."""
