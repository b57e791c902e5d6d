package devnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/rpc"
)

// RPC endpoint limits.
const (
	// MaxRPCBody is the largest request body the RPC handler reads (1 MiB).
	MaxRPCBody = 1 << 20
	// MaxRPCBatch is the most calls one batch may hold (go-ethereum's default).
	MaxRPCBatch = 1000
)

// JSON-RPC 2.0 error codes the handler produces itself.
const (
	codeParseError     = -32700
	codeInvalidRequest = -32600
	codeMethodNotFound = -32601
	codeInvalidParams  = -32602
	codeInternal       = -32603
)

// rpcRequest is one JSON-RPC call. ID is nil when absent (a notification)
// and "null" when the client sent null.
type rpcRequest struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// rpcResponse is one JSON-RPC answer.
type rpcResponse struct {
	Version string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// RPCHandler returns the chain's JSON-RPC endpoint over HTTP: POST with a
// JSON body holding one call or a batch (an array) of calls. Calls are
// forwarded to the node's in-process RPC server, so results and error
// objects (code, message, data such as revert data) are the node's own;
// ids are echoed unchanged and notifications (calls without an id) get no
// answer.
//
// Only the eth_, net_ and web3_ namespaces are served; subscriptions need a
// WebSocket and are refused. After an eth_sendRawTransaction or
// eth_sendTransaction succeeds a block is sealed before the answer is
// written, so the receipt is available at once; eth_sendRawTransactionSync
// (EIP-7966) sends, seals and returns the receipt.
//
// Other methods get 405, bodies over [MaxRPCBody] 413, a Content-Type other
// than application/json 415.
func (c *Chain) RPCHandler() http.Handler { return http.HandlerFunc(c.serveRPC) }

func (c *Chain) serveRPC(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed: JSON-RPC wants POST", http.StatusMethodNotAllowed)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			http.Error(w, "unsupported content type: want application/json", http.StatusUnsupportedMediaType)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRPCBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read request body", http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	body = bytes.TrimSpace(body)

	var out any
	switch {
	case len(body) > 0 && body[0] == '[':
		var calls []json.RawMessage
		if err := json.Unmarshal(body, &calls); err != nil {
			out = errorResponse(nil, codeParseError, "parse error")
			break
		}
		switch {
		case len(calls) == 0:
			out = errorResponse(nil, codeInvalidRequest, "empty batch")
		case len(calls) > MaxRPCBatch:
			out = errorResponse(nil, codeInvalidRequest, "batch too large")
		default:
			answers := make([]*rpcResponse, 0, len(calls))
			for _, call := range calls {
				if resp := c.handleCall(ctx, call); resp != nil {
					answers = append(answers, resp)
				}
			}
			if len(answers) > 0 {
				out = answers
			}
		}
	default:
		if !json.Valid(body) {
			out = errorResponse(nil, codeParseError, "parse error")
			break
		}
		if resp := c.handleCall(ctx, body); resp != nil {
			out = resp
		}
	}
	if out == nil { // notifications only
		w.WriteHeader(http.StatusOK)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(out); err != nil {
		c.log.Debug("devnet: writing RPC response", "err", err)
	}
}

// errorResponse builds an error answer.
func errorResponse(id json.RawMessage, code int, msg string) *rpcResponse {
	return &rpcResponse{Version: "2.0", ID: id, Error: &rpcError{Code: code, Message: msg}}
}

// validID reports whether id is a JSON string, number or null.
func validID(id json.RawMessage) bool {
	if len(id) == 0 {
		return false
	}
	switch b := id[0]; {
	case b == '"', b == '-', b >= '0' && b <= '9':
		return true
	case bytes.Equal(id, []byte("null")):
		return true
	}
	return false
}

// allowedMethod reports whether the handler serves method.
func allowedMethod(method string) bool {
	return strings.HasPrefix(method, "eth_") || strings.HasPrefix(method, "net_") || strings.HasPrefix(method, "web3_")
}

// handleCall answers one call; nil for a notification.
func (c *Chain) handleCall(ctx context.Context, raw json.RawMessage) *rpcResponse {
	var req rpcRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		return errorResponse(nil, codeInvalidRequest, "invalid request")
	}
	notification := req.ID == nil
	if !notification && !validID(req.ID) {
		return errorResponse(nil, codeInvalidRequest, "invalid request")
	}
	answer := func(resp *rpcResponse) *rpcResponse {
		if notification {
			return nil
		}
		resp.ID = req.ID
		return resp
	}
	if req.Version != "2.0" || req.Method == "" {
		return answer(errorResponse(nil, codeInvalidRequest, "invalid request"))
	}
	var args []any
	switch p := bytes.TrimSpace(req.Params); {
	case len(p) == 0 || bytes.Equal(p, []byte("null")):
	case p[0] == '[':
		var params []json.RawMessage
		if err := json.Unmarshal(p, &params); err != nil {
			return answer(errorResponse(nil, codeInvalidParams, "invalid params"))
		}
		for _, a := range params {
			args = append(args, a)
		}
	default:
		return answer(errorResponse(nil, codeInvalidParams, "non-array args"))
	}
	switch {
	case req.Method == "eth_subscribe" || req.Method == "eth_unsubscribe":
		return answer(errorResponse(nil, codeMethodNotFound, "notifications not supported"))
	case !allowedMethod(req.Method):
		return answer(errorResponse(nil, codeMethodNotFound, fmt.Sprintf("the method %s does not exist/is not available", req.Method)))
	}
	c.log.Debug("devnet: rpc", "method", req.Method)

	var result json.RawMessage
	var err error
	switch req.Method {
	case "eth_sendRawTransaction", "eth_sendTransaction":
		err = c.forward(ctx, &result, req.Method, args...)
		if err == nil {
			c.sealSent(result)
		}
	case "eth_sendRawTransactionSync":
		result, err = c.sendSync(ctx, args)
	default:
		err = c.forward(ctx, &result, req.Method, args...)
	}
	if err != nil {
		return answer(&rpcResponse{Version: "2.0", Error: toRPCError(err)})
	}
	return answer(&rpcResponse{Version: "2.0", Result: result})
}

// forward calls the node in process, mapping an empty result to null.
func (c *Chain) forward(ctx context.Context, result *json.RawMessage, method string, args ...any) error {
	err := c.rpc.CallContext(ctx, result, method, args...)
	if errors.Is(err, rpc.ErrNoResult) {
		err = nil
	}
	if err == nil && len(*result) == 0 {
		*result = json.RawMessage("null")
	}
	return err
}

// sendSync implements eth_sendRawTransactionSync: send, seal, return the
// receipt. The optional timeout argument is ignored: sealing is immediate.
func (c *Chain) sendSync(ctx context.Context, args []any) (json.RawMessage, error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, &callError{code: codeInvalidParams, msg: "missing value for required argument 0"}
	}
	var hash json.RawMessage
	if err := c.forward(ctx, &hash, "eth_sendRawTransaction", args[0]); err != nil {
		return nil, err
	}
	c.sealSent(hash)
	var receipt json.RawMessage
	if err := c.forward(ctx, &receipt, "eth_getTransactionReceipt", hash); err != nil {
		return nil, err
	}
	return receipt, nil
}

// sealSent seals the transaction whose hash a send method returned.
func (c *Chain) sealSent(result json.RawMessage) {
	var hash common.Hash
	if err := json.Unmarshal(result, &hash); err != nil {
		c.Commit()
		return
	}
	c.seal(hash)
}

// callError is an RPC error raised by the handler itself.
type callError struct {
	code int
	msg  string
}

func (e *callError) Error() string  { return e.msg }
func (e *callError) ErrorCode() int { return e.code }

// toRPCError keeps the node's error code, message and data.
func toRPCError(err error) *rpcError {
	out := &rpcError{Code: codeInternal, Message: err.Error()}
	var coded rpc.Error
	if errors.As(err, &coded) {
		out.Code = coded.ErrorCode()
		out.Message = coded.Error()
	}
	var withData rpc.DataError
	if errors.As(err, &withData) {
		out.Data = withData.ErrorData()
	}
	return out
}
