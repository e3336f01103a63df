// herald.js — Herald's browser client (in progress).
export {};
