package memory

// authState holds auth and release data. Placeholder: replaced by the auth store implementation.
type authState struct{}

func newAuthState() authState { return authState{} }
