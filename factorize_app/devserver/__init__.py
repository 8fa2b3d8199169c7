"""`make run` (manage.py devserver): the web server, one worker per model in its own process
and environment, restarted with back-off when they exit and when their code changes."""
