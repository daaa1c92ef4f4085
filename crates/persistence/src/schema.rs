// @generated automatically by Diesel CLI.

diesel::table! {
    author_post_counts (author_id, status) {
        author_id -> BigInt,
        status -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    outbox_state (id) {
        id -> BigInt,
        published_seq -> BigInt,
        pruned_seq -> BigInt,
        leader -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    post_counts (status) {
        status -> Text,
        count -> BigInt,
    }
}

diesel::table! {
    post_events (seq) {
        seq -> BigInt,
        kind -> Text,
        post_id -> BigInt,
        author_id -> BigInt,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    posts (id) {
        id -> BigInt,
        title -> Text,
        content -> Text,
        status -> Text,
        author_id -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    refresh_token_blacklist (jti) {
        jti -> Text,
        user_id -> BigInt,
        expires_at -> Timestamp,
        blacklisted_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        email -> Text,
        username -> Text,
        password_hash -> Text,
        is_staff -> Bool,
        is_active -> Bool,
        date_joined -> Timestamp,
    }
}

diesel::joinable!(posts -> users (author_id));
diesel::joinable!(refresh_token_blacklist -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    author_post_counts,
    outbox_state,
    post_counts,
    post_events,
    posts,
    refresh_token_blacklist,
    users,
);
