from e2b_matrix.cli import main

main()
