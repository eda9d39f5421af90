"""Fault-injection helpers: a TCP proxy to cut or slow storage, a killable export runner, exactly-once checks."""
