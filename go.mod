module github.com/wsl-modules/wsl-modules-action

go 1.26.0

require (
	github.com/goccy/go-yaml v1.19.2
	github.com/google/go-github/v66 v66.0.0
	github.com/klauspost/compress v1.20.4
	github.com/pierrec/lz4/v4 v4.1.33
	github.com/sethvargo/go-githubactions v1.3.0
	github.com/ulikunitz/xz v0.5.17
	golang.org/x/sync v0.25.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/google/go-querystring v1.1.0 // indirect
)
