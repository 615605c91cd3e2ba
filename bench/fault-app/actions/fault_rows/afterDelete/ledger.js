// After a delete commits: removes the companion ledger row. Run again after a crash
// (at least once), it finds nothing left to remove. Only ledger rows of this key
// written for an earlier event (seq below this delete's `parameters.seq`) are removed,
// so a late run could never take the ledger row of a later create of the same key.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const found = db.list('fault_ledger', {
    filter: [
      { fieldName: 'key', operator: 'equals', value: dbRow.key },
      { fieldName: 'seq', operator: 'lessThan', value: parameters.seq },
    ],
  });
  for (const row of found.data) {
    db.remove('fault_ledger', row.id);
  }
  return {};
}
