from dc_client.cli import main

main()
