// Before a create: refuses rows labelled `refuse:…` (nothing may be written for them)
// and stamps `check` from the key and version, so a stored row whose stamp does not
// match its fields was not written as one piece.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  if (typeof userInput.label === 'string' && userInput.label.indexOf('refuse:') === 0) {
    throw { status: 422, message: 'refused by the fault app' };
  }
  userInput.check = userInput.key + '#' + userInput.ver;
  return {};
}
