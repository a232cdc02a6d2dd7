"""Tools for support staff: the ``posbot`` command, the report of unanswered questions, handoff
release and console accounts."""
