// After a create commits: writes the companion ledger row (its own write, after the
// row's commit and before the client's answer) and tells every signed-in socket.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  db.create('fault_ledger', { key: dbRow.key, rowId: dbRow.id, ver: dbRow.ver });
  socket.emitAll('faultCreated', { key: dbRow.key, id: dbRow.id });
  return {};
}
