// Called on demand: GET|POST /1/objects/action/items/{id}?name=alertAdmins&parameters={"note":"…"}
// Sends the item and a note to every socket of a user with the Admin role.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (!dbRow) {
    throw { status: 400, message: 'call this action on one item: /1/objects/action/items/{id}' };
  }
  const alert = { item: dbRow.id, name: dbRow.name, note: parameters.note || '', from: userProfile.username };
  socket.emitRole('itemAlert', alert, 'Admin');
  console.log('alerted admins about item', dbRow.id);
  return { sent: true };
}
