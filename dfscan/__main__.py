from dfscan.cli import main

main()
