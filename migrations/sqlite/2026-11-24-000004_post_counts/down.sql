DROP TABLE post_counts;
