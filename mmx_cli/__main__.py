from mmx.commands.app import main

main()
