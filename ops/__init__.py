"""Starting the processes: the launcher (make run / shell, tests, bench, eval) and make cluster."""
