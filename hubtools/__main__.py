from hubtools.cli.app import run

run()
