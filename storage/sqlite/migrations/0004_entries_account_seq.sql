-- Entries are read in ledger order (seq), which is the order in which
-- balance_after was computed; created_at is when the request was made and
-- may disagree with it under concurrency. This index serves pages of an
-- account's entries in that order; entries_account_created still finds
-- where a time range starts.
CREATE INDEX entries_account_seq ON entries (account, seq);
