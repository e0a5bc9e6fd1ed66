"""The cityops shell: the command line, the one settings object and the local service supervisor."""
