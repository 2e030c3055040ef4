"""The Hub fetch as users drive it: fetch-model's arguments, messages and exit codes, in process."""
