"""Custom actions of posbot, served by ``rasa run actions``: one module per concern."""
