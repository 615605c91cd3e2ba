// After a delete commits: removes the companion ledger row, if there is one.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const found = db.list('fault_ledger', {
    filter: [{ fieldName: 'key', operator: 'equals', value: dbRow.key }],
  });
  for (const row of found.data) {
    db.remove('fault_ledger', row.id);
  }
  return {};
}
