// Provisioner: creates, suspends, resumes and deletes tenant databases and roles.
