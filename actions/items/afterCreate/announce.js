// Runs after a new item is committed: tells every signed-in socket about it.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  socket.emitAll('itemAdded', { id: dbRow.id, name: dbRow.name, by: userProfile.username });
  return {};
}
