from trainrepro.cli import main

main()
