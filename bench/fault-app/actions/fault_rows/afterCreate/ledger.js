// After a create commits: writes the companion ledger row (its own write, after the
// row's commit and before the client's answer) and tells every signed-in socket.
//
// After actions run at least once: a process killed after this action's write but
// before livebase marked it done runs it again at the next start (or on another node).
// `parameters.seq` is the create's number in the event log, the same on every run, so
// a run that finds a ledger row with its seq writes nothing. `seq` is unique in
// `fault_ledger` too: two runs at the same moment cannot both write (the second one's
// `db.create` throws, and the row is there). `key` is not unique, so a second ledger
// row for one create under another seq would be stored and lbfault would see it.
// `at` is when the row was written, so lbfault can count the rows written after a kill.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const seq = parameters.seq;
  const found = db.list('fault_ledger', {
    filter: [{ fieldName: 'seq', operator: 'equals', value: seq }],
  });
  if (found.data.length === 0) {
    db.create('fault_ledger', {
      key: dbRow.key,
      rowId: dbRow.id,
      ver: dbRow.ver,
      seq: seq,
      at: Date.now(),
    });
  }
  socket.emitAll('faultCreated', { key: dbRow.key, id: dbRow.id });
  return {};
}
