DROP TABLE refresh_token_blacklist;
DROP TABLE users;
