from edgeloop.cli import main

main()
