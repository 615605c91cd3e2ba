// Scenario "hostile": unbounded recursion; must end at the stack limit.
function backandCallback(userInput, dbRow, parameters, userProfile) {
  function down(n) {
    return down(n + 1) + 1;
  }
  return down(0);
}
