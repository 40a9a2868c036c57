from dfscan.cli import app

app()
