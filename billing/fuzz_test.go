package billing_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/perceptron-cloud/perceptron/billing"
)

// FuzzParseDollars checks that every accepted amount is exactly what its
// digits say and that everything else is refused, never misread.
func FuzzParseDollars(f *testing.F) {
	for _, s := range []string{"25", "25.5", "25.00", "0.01", "", ".5", "25.", "-1", "1e3", "99999999999.99", "٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := billing.ParseDollars(s)
		whole, frac, hasDot := strings.Cut(s, ".")
		digits := func(x string) bool {
			for _, c := range x {
				if c < '0' || c > '9' {
					return false
				}
			}
			return true
		}
		valid := whole != "" && len(whole) <= 12 && digits(whole) && (!hasDot || (len(frac) >= 1 && len(frac) <= 2 && digits(frac)))
		if valid != (err == nil) {
			t.Fatalf("ParseDollars(%q): err=%v, want valid=%v", s, err, valid)
		}
		if err != nil {
			return
		}
		for len(frac) < 2 {
			frac += "0"
		}
		cents, _ := strconv.ParseInt(whole+frac, 10, 64)
		if got != billing.FromCents(cents) {
			t.Fatalf("ParseDollars(%q) = %d, want %d cents", s, got, cents)
		}
	})
}
