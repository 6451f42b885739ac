module shoal.example/filter

go 1.24
