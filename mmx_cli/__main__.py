from mmx.app import main

main()
