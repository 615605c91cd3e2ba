// Runs after a new item is committed: tells the signed-in roles that may read items about
// it. It sends only what those readers could fetch themselves (id and name), never the
// creator's email, and never to anonymous sockets (emitAll would reach those too).
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const note = { id: dbRow.id, name: dbRow.name };
  for (const role of ['Admin', 'User', 'ReadOnly']) {
    socket.emitRole('itemAdded', note, role);
  }
  return {};
}
