module github.com/sluice-edge/sluice/sdk

go 1.24
