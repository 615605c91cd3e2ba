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
//
// A run again can come after later changes of the row, its delete included: a node
// takes over a killed node's owed events seconds later, when the row's writer may have
// deleted it meanwhile and `afterDelete` removed the ledger row. So the row must still
// be there, before the write and after it: a delete committed in between either comes
// before the second look (which then removes the ledger row again) or after it, when
// its `afterDelete`, which runs after that commit, finds the ledger row and removes it.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const seq = parameters.seq;
  if (!rowExists(dbRow.id)) {
    return {};
  }
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
    if (!rowExists(dbRow.id)) {
      removeLedger(seq);
      return {};
    }
  }
  socket.emitAll('faultCreated', { key: dbRow.key, id: dbRow.id });
  return {};
}

function rowExists(id) {
  try {
    db.get('fault_rows', id);
    return true;
  } catch (e) {
    if (e.status === 404) {
      return false;
    }
    throw e;
  }
}

// Removes this create's ledger row; `afterDelete` may have removed it first.
function removeLedger(seq) {
  const found = db.list('fault_ledger', {
    filter: [{ fieldName: 'seq', operator: 'equals', value: seq }],
  });
  for (const row of found.data) {
    try {
      db.remove('fault_ledger', row.id);
    } catch (e) {
      if (e.status !== 404) {
        throw e;
      }
    }
  }
}
