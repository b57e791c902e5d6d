package memory

// billingState holds billing data. Placeholder: replaced by the billing store implementation.
type billingState struct{}

func newBillingState() billingState { return billingState{} }
