package billing

import (
	"fmt"
	"strings"

	"github.com/perceptron-cloud/perceptron/fault"
)

// ParseDollars parses a dollar amount as the purchase API accepts it:
// digits with an optional "." and one or two decimals ("25", "25.5",
// "25.00"). Signs, exponents, more decimals, spaces and anything else give
// fault.Invalid "invalid amount". Zero is returned as zero; callers apply
// their own minimum.
func ParseDollars(s string) (MicroCents, error) {
	bad := fault.New(fault.Invalid, MsgInvalidAmount)
	whole, frac, hasDot := strings.Cut(s, ".")
	if whole == "" || len(whole) > 12 || (hasDot && (len(frac) < 1 || len(frac) > 2)) {
		return 0, bad
	}
	var cents int64
	for _, c := range whole {
		if c < '0' || c > '9' {
			return 0, bad
		}
		cents = cents*10 + int64(c-'0')
	}
	cents *= 100
	for i, c := range frac {
		if c < '0' || c > '9' {
			return 0, bad
		}
		if i == 0 {
			cents += 10 * int64(c-'0')
		} else {
			cents += int64(c - '0')
		}
	}
	return FromCents(cents), nil
}

// FormatDollars renders whole cents of m as "$25.00" (rounded down).
func FormatDollars(m MicroCents) string {
	c := m.FloorCents()
	sign := ""
	if c < 0 {
		sign, c = "-", -c
	}
	return fmt.Sprintf("%s$%d.%02d", sign, c/100, c%100)
}
