-- A chat settlement is the most frequent write there is. The index on
-- (account, type, status) made every entry update one more B-tree, for
-- one reader: HasCompletedPurchase. A partial index of completed
-- purchases serves that query (written with these literals, so that the
-- planner can match the index's condition) and leaves other entries out.
DROP INDEX entries_account_type;
CREATE INDEX entries_completed_purchase ON entries (account) WHERE type = 'Purchase' AND status = 'Completed';
