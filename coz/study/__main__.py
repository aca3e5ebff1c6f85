from coz.study.tool import main

if __name__ == "__main__":
    main()
