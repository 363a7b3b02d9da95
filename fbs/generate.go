package fbs

// The generated code in snapfb is committed because `go build` never runs
// flatc. It was produced by Debian's flatc 2.0.8, which emits no key-lookup or
// file-identifier helpers (deps.md §2), so lookup.go and open.go carry their
// own binary search and identifier check. Regenerate after editing the schema
// (appending fields only) and commit the result:
//
//	go generate ./fbs

//go:generate flatc --go -o . snapshot.fbs
