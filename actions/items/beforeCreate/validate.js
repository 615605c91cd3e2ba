// Runs before every new item is written. What it leaves in userInput is what gets
// stored; throwing refuses the write (nothing is stored, no event is sent).
function backandCallback(userInput, dbRow, parameters, userProfile) {
  const name = (userInput.name || '').trim();
  if (name.length === 0) {
    throw { status: 400, message: 'an item needs a name' };
  }
  if (userInput.price !== undefined && userInput.price < 0) {
    throw { status: 400, message: 'price cannot be negative' };
  }
  userInput.name = name;
  // Fill the owner field with the creating user when the client left it out.
  if (userInput.owner === undefined && userProfile.userId) {
    userInput.owner = Number(userProfile.userId);
  }
  return {};
}
