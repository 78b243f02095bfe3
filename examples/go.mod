module github.com/sluice-edge/sluice/examples

go 1.24

require github.com/sluice-edge/sluice/sdk v0.0.0

replace github.com/sluice-edge/sluice/sdk => ../sdk
