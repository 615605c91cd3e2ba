// Before an update: re-stamps `check` for the new version (the key never changes).
function backandCallback(userInput, dbRow, parameters, userProfile) {
  userInput.check = dbRow.key + '#' + userInput.ver;
  return {};
}
