"""CLI sub-commands that need the training extras (`dfscan extract`, `eval`, `train`, `export`). Each
module parses options and prints; heavy imports (torch, sklearn) happen inside the command functions."""
