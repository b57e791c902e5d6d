//go:build !race

package httpserver_test

// raceDetector reports whether the tests run with -race, which slows
// everything several times: time bounds double.
const raceDetector = false
