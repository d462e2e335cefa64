package lab

// sysSetns is setns(2)'s number on arm64.
const sysSetns = 268
