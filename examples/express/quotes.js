'use strict';
// Public-domain quotations the web server sends when QUOTES_URL is unset.
module.exports = [
  { text: 'I think, therefore I am.', author: 'René Descartes' },
  { text: 'Brevity is the soul of wit.', author: 'William Shakespeare' },
  { text: 'If I have seen further it is by standing on the shoulders of Giants.', author: 'Isaac Newton' },
  { text: 'Well done is better than well said.', author: 'Benjamin Franklin' },
  { text: 'Hope is the thing with feathers that perches in the soul.', author: 'Emily Dickinson' },
  { text: 'It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.', author: 'Jane Austen' },
  { text: 'The only thing we have to fear is fear itself.', author: 'Franklin D. Roosevelt' },
  { text: 'The unexamined life is not worth living.', author: 'Socrates' },
  { text: 'Knowledge is power.', author: 'Francis Bacon' },
  { text: 'Genius is one per cent inspiration, ninety-nine per cent perspiration.', author: 'Thomas Edison' },
];
