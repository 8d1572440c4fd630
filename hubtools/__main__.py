from hubtools.cli.app import entry_point

entry_point()
