from coz.fetch.cli import main

main()
