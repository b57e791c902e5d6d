package evm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"unicode"

	"github.com/ethereum/go-ethereum"

	"github.com/perceptron-cloud/perceptron/fault"
)

// ERC-20 view selectors: the first four bytes of keccak256 of the signature.
const (
	selectorDecimals = "\x31\x3c\xe5\x67" // decimals()
	selectorSymbol   = "\x95\xd8\x9b\x41" // symbol()
)

// CheckTokens calls decimals() and symbol() on every configured token and
// returns an error naming each chain whose token does not match: decimals
// must equal Chain.Decimals exactly; the symbol must be a USDT variant
// ("USDT", "USDT0", "USD₮0", "USDt", "USDT.e" and the like, compared
// leniently). A wrong address usually fails both. Chains that cannot be
// reached (no RPC URL, endpoint down) are reported as fault.Unavailable;
// mismatches as fault.Invalid. The errors are joined; nil means all good.
//
// Servers should call it at start and refuse to run on a mismatch.
func (v *Verifier) CheckTokens(ctx context.Context) error {
	var errs []error
	for _, id := range v.order {
		cc := v.chains[id]
		if err := v.checkToken(ctx, cc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// checkToken checks one chain's token.
func (v *Verifier) checkToken(ctx context.Context, cc *chainConn) error {
	c := cc.chain
	client, err := cc.get(ctx)
	if err != nil {
		return fault.Wrap(err, fault.Unavailable, fmt.Sprintf("chain %d (%s) is unavailable", c.ID, c.Name))
	}
	out, err := client.CallContract(ctx, ethereum.CallMsg{To: &c.Token, Data: []byte(selectorDecimals)}, nil)
	if err != nil {
		return fault.Wrap(err, fault.Unavailable, fmt.Sprintf("chain %d (%s): calling decimals() on %s failed", c.ID, c.Name, c.Token.Hex()))
	}
	if len(out) != 32 {
		return fault.Newf(fault.Invalid, "chain %d (%s): %s has no decimals() (is it a token contract?)", c.ID, c.Name, c.Token.Hex())
	}
	if d := new(big.Int).SetBytes(out); !d.IsUint64() || d.Uint64() != uint64(c.Decimals) {
		return fault.Newf(fault.Invalid, "chain %d (%s): token %s has %s decimals, configured %d", c.ID, c.Name, c.Token.Hex(), d, c.Decimals)
	}
	out, err = client.CallContract(ctx, ethereum.CallMsg{To: &c.Token, Data: []byte(selectorSymbol)}, nil)
	if err != nil {
		return fault.Wrap(err, fault.Unavailable, fmt.Sprintf("chain %d (%s): calling symbol() on %s failed", c.ID, c.Name, c.Token.Hex()))
	}
	sym, ok := decodeSymbol(out)
	if !ok || !IsUSDTSymbol(sym) {
		return fault.Newf(fault.Invalid, "chain %d (%s): token %s has symbol %q, not USDT", c.ID, c.Name, c.Token.Hex(), sym)
	}
	v.log.Info("evm: token checked", "chain_id", c.ID, "chain", c.Name, "token", c.Token.Hex(), "symbol", sym, "decimals", c.Decimals)
	return nil
}

// decodeSymbol decodes an ABI string return value, or a bytes32 one as some
// old tokens return.
func decodeSymbol(out []byte) (string, bool) {
	if len(out) == 32 {
		return string(bytes.TrimRight(out, "\x00")), true
	}
	if len(out) < 64 {
		return "", false
	}
	off := new(big.Int).SetBytes(out[:32])
	if !off.IsUint64() || off.Uint64() > uint64(len(out)-32) {
		return "", false
	}
	o := off.Uint64()
	n := new(big.Int).SetBytes(out[o : o+32])
	if !n.IsUint64() || n.Uint64() > uint64(len(out))-o-32 {
		return "", false
	}
	return string(out[o+32 : o+32+n.Uint64()]), true
}

// IsUSDTSymbol reports whether a token symbol names USDT: after mapping
// "₮" to "T", dropping everything but letters and digits and upper-casing,
// it must be "USDT" followed by nothing, "0" (USDT0) or "E" (bridged
// "USDT.e").
func IsUSDTSymbol(sym string) bool {
	var b strings.Builder
	for _, r := range sym {
		switch {
		case r == '₮':
			b.WriteByte('T')
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToUpper(r))
		}
	}
	switch b.String() {
	case "USDT", "USDT0", "USDTE":
		return true
	}
	return false
}
