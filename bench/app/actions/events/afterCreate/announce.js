// Scenario "write → action → emit → receive": every created event is announced to
// every authenticated socket.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  socket.emitAll('created', { seq: dbRow.seq, id: dbRow.id });
  return {};
}
