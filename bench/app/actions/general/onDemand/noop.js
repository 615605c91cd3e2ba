// Scenario "actions": the cost of calling an action that does nothing.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  return null;
}
